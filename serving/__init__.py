"""Serving of exported models over TF Serving's REST and gRPC APIs.

`python -m serving` (also `python -m trainer.serve`) is the entry point. It
depends on core/ and on what the export itself carries (its signatures and
assets.extra/), never on Apache Beam or tf.Transform. The pieces, one concern
each:

  request_checks.py  request bodies -> checked raw feature rows, or a 400
                     naming the field and the instance
  model_store.py     loads <base>/<version>/ SavedModels and hot-swaps a
                     newer version off the request path
  batcher.py         merges concurrent requests into one signature call
  request_log.py     one JSON line per served instance, rotated by size;
                     the input of `python -m pipeline.skew`
  app.py             the aiohttp routes (TF Serving's URLs and JSON shapes)
  grpc_api.py        TF Serving's gRPC PredictionService and ModelService
                     (tensorflow-serving-api's protos) on grpc.aio, in the
                     same event loop as the routes
  grpc_requests.py   TensorProto and tf.Example inputs -> the same checked
                     rows as a REST body, with the same messages
  outputs.py         signature outputs -> classify / regress results and
                     the request log's prediction, for REST and gRPC alike
  connections.py     the connection cap, idle timeout and JSON answers to
                     requests that are not HTTP: stalled clients cannot take
                     the server down
  server.py          flags, start-up, signals and graceful shutdown
"""

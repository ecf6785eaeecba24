"""REST serving of the exported model, compatible with TF Serving's REST API.

`python -m trainer.serve` is the entry point; the pieces, one concern each:

  validation.py   request bodies -> checked raw feature rows, or a 400 naming
                  the field and the instance
  model_store.py  loads export/<version>/ SavedModels and hot-swaps a newer
                  version off the request path
  batcher.py      merges concurrent requests into one signature call
  request_log.py  one JSON line per served instance, rotated by size; the
                  input of `python -m pipeline.skew`
  app.py          the aiohttp routes (TF Serving's URLs and JSON shapes)
  connections.py  the connection cap, idle timeout and JSON answers to
                  requests that are not HTTP: stalled clients cannot take
                  the server down
  server.py       flags, start-up, signals and graceful shutdown
"""

"""Signature outputs -> TF Serving's answers, the same for REST and gRPC.

A signature call gives {output name: array, first axis = rows}. What a
client gets from it does not depend on the protocol it spoke: :classify and
Classify pair the probabilities with the label's classes, :regress and
Regress take the predictions, and the request log records the same
"prediction" whichever way the request came. Only the wording of an error
differs, in the name it gives the other methods (`:predict` over REST,
`Predict` over gRPC).
"""

from typing import Any, Dict, List, Mapping

import numpy as np

from core.layout import ExportDir
from serving import request_checks
from serving.model_store import LoadedModel

# How an error message names the methods: REST's URL verbs by default.
REST_NAMES = {
    'predict': ':predict',
    'classify': ':classify',
    'regress': ':regress'
}
GRPC_NAMES = {
    'predict': 'Predict',
    'classify': 'Classify',
    'regress': 'Regress'
}


def json_column(value: np.ndarray) -> List[Any]:
  """An output array as JSON values; strings (bytes) decoded as UTF-8, as
  TF Serving does for outputs whose name does not end in _bytes."""
  values = value.tolist()
  if value.dtype == object:
    values = _decode(values)
  return values


def _decode(values: Any) -> Any:
  if isinstance(values, bytes):
    return values.decode('utf-8', errors='replace')
  if isinstance(values, list):
    return [_decode(v) for v in values]
  return values


def check_classifier(model: LoadedModel,
                     names: Mapping[str, str] = REST_NAMES) -> None:
  if not model.classes:
    raise request_checks.RequestError(
        'this model is not a classifier (its label has no classes); use '
        f'{names["predict"]}')


def check_regressor(model: LoadedModel,
                    names: Mapping[str, str] = REST_NAMES) -> None:
  if model.classes:
    raise request_checks.RequestError(
        'this model is a classifier (its label has classes); use '
        f'{names["classify"]} or {names["predict"]}')


def regress_results(outputs: Dict[str, np.ndarray],
                    names: Mapping[str, str] = REST_NAMES) -> List[float]:
  """TF Serving's regress result: one number per example."""
  if ExportDir.PREDICTIONS not in outputs:
    raise request_checks.RequestError(
        f'the signature has no {ExportDir.PREDICTIONS!r} output to regress '
        f'with; use {names["predict"]}')
  return outputs[ExportDir.PREDICTIONS].reshape(-1).astype(np.float64).tolist()


def classify_results(
    model: LoadedModel,
    outputs: Dict[str, np.ndarray],
    names: Mapping[str, str] = REST_NAMES) -> List[List[List[Any]]]:
  """TF Serving's classify result: [[label, score], ...] per example, one
  pair per class. A single probability column is P(positive) of a binary
  label; otherwise one column per class, in the config's class order."""
  if ExportDir.PROBABILITIES not in outputs:
    raise request_checks.RequestError(
        f'the signature has no {ExportDir.PROBABILITIES!r} output to classify '
        f'with; use {names["predict"]}')
  probs = outputs[ExportDir.PROBABILITIES]
  probs = probs.reshape(len(probs), -1).astype(np.float64)
  classes = model.classes
  if probs.shape[1] == 1 and len(classes) == 2:
    positive = model.positive if model.positive in classes else classes[1]
    negative = [c for c in classes if c != positive][0]
    return [[[negative, 1.0 - p], [positive, p]] for p in probs[:, 0].tolist()]
  if probs.shape[1] == len(classes):
    return [[[c, p] for c, p in zip(classes, row)] for row in probs.tolist()]
  raise request_checks.RequestError(
      f'the model gives {probs.shape[1]} probabilities per row for '
      f'{len(classes)} classes; {names["classify"]} cannot pair them, use '
      f'{names["predict"]}')

"""The regression head's last layer and loss, as Keras classes.

A module of their own, imported by the head when it builds a model, so that
a command which only scores exports (trainer.push) loads no Keras.
"""

import tensorflow as tf
import tf_keras as keras


class Rescale(keras.layers.Layer):
  """y = x * scale + shift with fixed constants: un-standardizes a
  regression output so the model speaks the label's units."""

  def __init__(self, scale: float, shift: float, **kwargs):
    super().__init__(**kwargs)
    self.scale, self.shift = float(scale), float(shift)

  def call(self, inputs):
    return inputs * self.scale + self.shift

  def get_config(self):
    return dict(super().get_config(), scale=self.scale, shift=self.shift)


class StandardizedMeanSquaredError(keras.losses.Loss):
  """Mean squared error in units of the train label's standard deviation.

  Equal to plain MSE divided by std², so its gradient with respect to the
  standardized output is that of a unit-scale problem.
  """

  def __init__(self, std: float, name: str = 'standardized_mse', **kwargs):
    super().__init__(name=name, **kwargs)
    self.std = float(std)

  def call(self, y_true, y_pred):
    diff = (tf.cast(y_pred, tf.float32) - tf.cast(y_true, tf.float32))
    return tf.reduce_mean(tf.square(diff / self.std), axis=-1)

  def get_config(self):
    return dict(super().get_config(), std=self.std)

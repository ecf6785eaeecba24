"""Beam-free, Keras-free core shared by pipeline/, trainer/ and serving/:
dataset config, raw values, layouts and names; imports nothing heavy."""

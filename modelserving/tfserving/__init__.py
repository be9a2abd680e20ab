"""TF Serving's gRPC API: its messages and services as .proto files of our own (the same
packages, names and field numbers as TF Serving's), and the Python modules generated from them
(`make protos`; committed, checked against a fresh generation by a unit test).

Our own files rather than the tensorflow-serving-api wheel, which requires all of TensorFlow
(hundreds of MB) for a dozen small messages."""

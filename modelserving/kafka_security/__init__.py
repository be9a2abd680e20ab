"""How a Kafka client of the inference log proves itself and checks the broker: the one place for
it. The sidecar's producer, the operator's topic admin, `modelserving logs` and every other reader
take a `KafkaSecurity` and turn it into aiokafka's options with `client_options()`.

- `settings`: the `KafkaSecurity` dataclass, its checks and aiokafka's options from it;
- `diagnosis`: what a refused connection means (a LoggingReady reason and a message);
- `config_file`: the settings in the sidecar config file's form, written by the operator;
- `properties`: the settings from a Kafka client properties file;
- `flags`: the connection flags of the log's readers.

Callers import each name from the module that defines it.
"""

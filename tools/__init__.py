"""Helpers outside the package (tiny models, Whisper assets, synthetic data, converters), imported as
``tools.<module>`` by the tests and benchmarks and run as ``python tools/<script>.py``."""

"""Generic helpers with no knowledge of pets, models or MLflow: hashing files, streaming an HTTP
download, retrying with backoff, flattening nested dicts, mapping over worker processes.

Each is written once here because two or more packages need it. Nothing here imports the rest of
petvision except :mod:`petvision.core.errors`.
"""

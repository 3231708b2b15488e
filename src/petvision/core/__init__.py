"""What every layer of petvision stands on: the project root and its paths, the error types a
user can act on, and writes that land whole or not at all. Imports nothing else of petvision."""

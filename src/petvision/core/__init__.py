"""What every layer of petvision stands on: the project root and its paths, the error types a
user can act on, writes that land whole or not at all, and the two tasks. Imports nothing else
of petvision."""

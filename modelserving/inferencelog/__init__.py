"""Reading the inference log back: the reader, dedupe, export and their command lines."""

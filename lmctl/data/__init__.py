"""Reading data: text/json/csv/parquet/dataset readers, tokenizer trainers, resolving input paths."""

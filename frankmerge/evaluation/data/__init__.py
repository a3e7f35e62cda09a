"""Local benchmark data: parquet (Hugging Face layout) and VLMEvalKit TSV tables, image cells."""

from frankmerge.evaluation.data.images import image_refs, load_image
from frankmerge.evaluation.data.tables import Row, Table, cell, is_missing, read_table, require_columns

__all__ = ["Row", "Table", "cell", "image_refs", "is_missing", "load_image", "read_table", "require_columns"]

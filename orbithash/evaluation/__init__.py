"""Retrieval metrics (mAP with ties by database order, accuracy), LSH/ITQ baselines and reports."""

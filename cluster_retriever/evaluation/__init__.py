"""Evaluation: IR and RAGAS metrics, the models x modes grid, and the report."""

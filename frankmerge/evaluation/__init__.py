"""Benchmark harness for reasoning VLMs: generation backends, answer extraction, official scorers, reports.

Import the pieces from their modules (``frankmerge.evaluation.run``, ``.extract``, ...); this
package file stays empty of imports so that ``frankmerge.evaluation.extract`` loads nothing heavy.
"""

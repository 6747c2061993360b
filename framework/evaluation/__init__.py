"""Evaluation: what judges a trained model once training is over — physics scoring (surprise on matched
sets of possible and impossible clips), statistics (percentile-bootstrap confidence intervals for every
reported number and a "resolved" / "within noise" label for every difference between two models), and the
other measures `patchworld compare` reports; nothing here updates a model.
"""

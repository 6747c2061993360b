"""Evaluation: what judges a trained model once training is over; nothing here updates a model.

* `features`: frozen features extracted once (and saved) for probes and the layer search;
* `probes`: attentive and linear probes with a validation-chosen sweep;
* `physics`: predictive surprise on matched sets of possible and impossible clips (``patchworld physics``);
* `statistics`: percentile-bootstrap confidence intervals for every reported number, AUROC, and a
  "resolved" / "within noise" label for every difference between two models;
* `cost`: training FLOPs, parameters and peak memory;
* the comparison (``patchworld compare``): its clips (`clips`), contestants (`contestants`: trained models,
  random-init controls, baselines), the study (`study`), the command (`compare`) and its outputs (`report`).
"""

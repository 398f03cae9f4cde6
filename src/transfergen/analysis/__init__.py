"""Analyses of a transfer setting: how far the target domain is from the pretraining data."""

"""Thin Lightning wrappers: training (DiffusionModule) and data (StepDataModule). No math here."""

"""Whether to trust a trained model's answer: the out-of-distribution check (features, summary, outlier head,
the detector chooser) and the malignancy referral level, and the commands that write them into a model folder."""

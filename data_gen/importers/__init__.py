"""Importers from classification-style dermatology datasets (HAM10000, PAD-UFES-20, Fitzpatrick17k) to the Derm1M CSV format."""

"""data_gen: Derm1M-format captions + disease ontology -> question-answer records (no model code)."""

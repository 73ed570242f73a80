"""Using a trained model: batched greedy answers, option likelihood, chat state, caption reports."""

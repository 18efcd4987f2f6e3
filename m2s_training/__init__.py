"""m2s_training: data, multi-scan fusion, losses, the trainer, evaluation and bag tools."""

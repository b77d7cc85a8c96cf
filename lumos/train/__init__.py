"""One training loop for every task: DeepSpeed engine, EMA, checkpoints, exact resume, dvclive."""

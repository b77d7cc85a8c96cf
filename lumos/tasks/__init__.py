"""Training tasks: each is an adapter (model + batch -> loss) for the one loop in lumos.train."""

"""Multi-view rendering of 3D objects for novel view synthesis (supplement G.3)."""

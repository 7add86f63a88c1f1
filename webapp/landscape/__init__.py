"""An experiment's Landscape tab: launch analyses (surfaces, slices, trajectories, spectra)
with their cost, follow them, and draw their results per run on one colour scale."""

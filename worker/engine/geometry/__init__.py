"""Landscape geometry: directions, grid evaluation, PCA, Hessian spectra and analysis jobs."""

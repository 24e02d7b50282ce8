"""What a run looks like: rank lists of the four settings, t-SNE of O and P features, O | M | P | R
grids (``views``), drawn with PIL (``drawing``); the engine writes them to TensorBoard."""

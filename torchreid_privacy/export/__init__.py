"""ONNX: ``exporter`` writes G, G_R or C as an ONNX graph, ``runtime`` runs such a graph with
onnxruntime (numpy only), ``folder`` anonymizes an image folder with it."""

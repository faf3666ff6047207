"""A user's own architectures, outside bench: sweeps/examples/textcnn.yaml names `mynets.cnn:TextCNN`."""

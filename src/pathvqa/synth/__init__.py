"""The PathVQA-shaped synthetic set: tiles, the questions asked of them, and the generator that writes a dataset."""

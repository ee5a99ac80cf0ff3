"""What a user runs: the command line, the Python API, the Gradio app, export, and the offline demo study."""

"""What a user runs: the command line, the Gradio app, export, and the offline demo study."""

"""The FoodVision Gradio demos (one folder each) and `python -m demos.package`, which turns a demo
folder into a self-contained Hugging Face Space."""

"""The playground: a local web page that puts the course's trained models side by side.

`python -m scripts.playground` (or `make play`) serves it on http://127.0.0.1:8000. It is the one place that
imports the stages: each stage's own loading and decoding code answers the page's requests.
"""

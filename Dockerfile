# BioGPT Studio on a CPU: docker build -t biogpt-studio . && docker run -p 7860:7860 biogpt-studio
# Settings are environment variables (README, "Space"): docker run -e BIOGPT_STUDIO_MODEL=microsoft/biogpt ...
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 studio
WORKDIR /home/studio/app

# The pinned requirements first (a layer that survives code changes); torch 2.13.0's CPU build from
# PyTorch's index, so pip does not pull the multi-GB CUDA build.
COPY requirements.txt .
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install --no-cache-dir -r requirements.txt

COPY --chown=studio:studio . .
RUN pip install --no-cache-dir --no-deps . && rm -rf build *.egg-info

USER studio
ENV GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 HF_HOME=/home/studio/.cache/huggingface \
    PYTHONUNBUFFERED=1
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=8)" || exit 1
CMD ["biogpt-studio"]

# livetune for a GPU host. Build: docker build -t livetune .
# Run:   docker run --gpus all -p 3000:3000 -v livetune-data:/data livetune
# The base image already carries a CUDA build of torch; nothing below reinstalls it.
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BENTOML_DO_NOT_TRACK=true \
    HF_HUB_OFFLINE=1 \
    LIVETUNE_DATA_DIR=/data \
    LIVETUNE_DEVICE=auto \
    LIVETUNE_LABELS_FILE=/app/examples/support_labels.txt

WORKDIR /app

# Dependency layer first: it only changes when pyproject.toml does.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Code last, so a code change rebuilds in seconds. No secrets are baked in:
# tokens and other settings come from the environment at run time.
COPY service ./service
COPY training ./training
COPY examples ./examples
COPY bentofile.yaml README.md ./

RUN useradd --create-home --uid 10001 livetune \
    && mkdir -p /data && chown livetune:livetune /data
USER livetune
VOLUME ["/data"]
EXPOSE 3000

HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4).status != 200)"

CMD ["bentoml", "serve", "service.service:Livetune", "--host", "0.0.0.0", "--port", "3000"]

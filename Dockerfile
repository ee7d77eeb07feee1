# One image for the API, the workers and Flower; the command picks the part.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY settings.py celeryconfig.py ./
COPY api ./api
COPY tasks ./tasks

RUN useradd --create-home --uid 1000 gateway
USER gateway

EXPOSE 8000 5555
CMD ["uvicorn", "--factory", "api.main:create_app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "30"]

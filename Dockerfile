# One image for the API, the workers and Flower; the command picks the part.
# It holds the installed package (`pip install .`): exactly what the wheel holds,
# so a module added to the code is in the image without touching this file.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

# The pinned requirements first: their layer is rebuilt only when they change.
COPY requirements.txt /src/requirements.txt
RUN pip install -r /src/requirements.txt

COPY . /src
RUN pip install --no-deps /src && pip check && rm -rf /src

# Nothing of the source tree here: the processes import the installed package.
WORKDIR /app
RUN useradd --create-home --uid 1000 gateway
# The file store (FILE_STORE_URL=/data in compose): a volume mounted here starts out
# owned by the user the processes run as.
RUN mkdir /data && chown gateway:gateway /data
USER gateway

EXPOSE 8000 5555
CMD ["uvicorn", "--factory", "api.main:create_app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "30"]

#!/bin/sh
# The tensorflow/serving image's entrypoint contract (tensorflow_serving/tools/docker/
# tf_serving_entrypoint.sh), with mlsrv: gRPC on 8500, REST on 8501, the model
# ${MODEL_BASE_PATH}/${MODEL_NAME}, and whatever `docker run IMAGE ...` adds appended, so a later
# flag wins (--rest_api_port=9000) and --model_config_file replaces the single model.
# MODEL_BASE_PATH may be a local folder or s3://, gs://, az:// (mlsrv[s3|gcs|azure]).
exec mlsrv serve --port=8500 --rest_api_port=8501 \
    --model_name="${MODEL_NAME:-model}" --model_base_path="${MODEL_BASE_PATH:-/models}/${MODEL_NAME:-model}" \
    "$@"

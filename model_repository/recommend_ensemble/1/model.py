"""Triton adapter of the two-stage recommender (Python backend, BLS).

The request path lives in ``ecrs.serving``. This file turns Triton requests
into calls to it and runs ``user_tower`` and ``deepfm_rank`` through BLS
calls pinned to one exported version. It maps ECRS errors to Triton error
codes.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from ecrs.config import StoreConfig
from ecrs.errors import EcrsError, UnavailableError
from ecrs.serving.requests import INPUT_NAMES
from ecrs.serving.triton_model import RecommendModel, model_parameters


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.logger = pb_utils.Logger
        self.model = RecommendModel(
            model_folder=args["model_repository"],
            parameters=model_parameters(config),
            stores=StoreConfig.from_env(),
            user_tower=self._bls_tower,
            ranker=self._bls_rank,
        )
        self.logger.log_info(
            f"recommend_ensemble serves version {self.model.version} "
            f"(collection {self.model.collection})"
        )

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        inputs = {}
        for name in INPUT_NAMES:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            inputs[name] = None if tensor is None else tensor.as_numpy()
        try:
            result = self.model.recommend(inputs)
        except EcrsError as exc:
            # Each request error's status is the name of its TritonError code.
            code = getattr(pb_utils.TritonError, exc.status or "INTERNAL")
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(exc), code)
            )
        except Exception as exc:  # report, keep serving the other requests
            self.logger.log_error(f"recommend_ensemble failed: {exc!r}")
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    f"internal error: {exc!r}", pb_utils.TritonError.INTERNAL
                )
            )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(
                    "ITEM_IDS", np.array(result.item_ids, dtype=np.object_)
                ),
                pb_utils.Tensor("SCORES", result.scores.astype(np.float32)),
                pb_utils.Tensor(
                    "ITEM_DETAILS", np.array(result.details, dtype=np.object_)
                ),
                pb_utils.Tensor(
                    "UNKNOWN_FEATURES",
                    np.array(result.unknown_features, dtype=np.object_),
                ),
            ]
        )

    def _bls_tower(self, rows):
        outputs = self._bls(
            "user_tower", {"USER_FEATURE_IDS": rows}, ["USER_EMBEDDING"]
        )
        return outputs["USER_EMBEDDING"]

    def _bls_rank(self, user_rows, item_rows):
        feeds = {"USER_FEATURE_IDS": user_rows, "ITEM_FEATURE_IDS": item_rows}
        return self._bls("deepfm_rank", feeds, ["SCORE"])["SCORE"][:, 0]

    def _bls(self, model_name, feeds, output_names):
        request = pb_utils.InferenceRequest(
            model_name=model_name,
            model_version=self.model.version,
            requested_output_names=output_names,
            inputs=[pb_utils.Tensor(name, value) for name, value in feeds.items()],
        )
        response = request.exec()
        if response.has_error():
            raise UnavailableError(
                f"model {model_name} version {self.model.version} failed: "
                f"{response.error().message()}",
                service=model_name,
            )
        return {
            name: pb_utils.get_output_tensor_by_name(response, name).as_numpy()
            for name in output_names
        }

    def finalize(self):
        self.model.close()

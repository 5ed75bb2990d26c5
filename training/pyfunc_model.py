"""MLflow "model from code" wrapper of a bundle: logged as source, never pickled.

``mlflow.pyfunc.load_model(models:/payroute@champion)`` runs this file; it loads the bundle folder logged
under the ``bundle`` artifact key with :meth:`payroute.model_bundle.ModelBundle.load`.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class ApprovalBundleModel(PythonModel):
    """Calibrated approval probability per row of a feature frame."""

    def load_context(self, context):
        from payroute.model_bundle import BUNDLE_ARTIFACT_KEY, ModelBundle

        self.bundle = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.bundle.predict_approval(model_input)


mlflow.models.set_model(ApprovalBundleModel())

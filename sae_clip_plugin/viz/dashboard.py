"""Feature dashboards: one import for the data, the notebook figures and the static HTML page.

from sae_clip_plugin.viz.dashboard import collect_dashboard_data, plot_feature, write_dashboard
data = collect_dashboard_data(model, sae, images, features=[3, 17], vocabulary="toy")
plot_feature(data.features[0])              # a matplotlib Figure (shown inline in Jupyter)
write_dashboard(data, "dashboard.html")     # self-contained page, images embedded as base64 PNG
"""

from sae_clip_plugin.analysis.dashboard import (
    DashboardData,
    FeatureData,
    TopImage,
    collect_dashboard_data,
    display_images,
    feature_activations,
    patch_grid,
    patch_side,
    steering_effect,
)
from sae_clip_plugin.viz.dashboard_figures import (
    overlay_heatmap,
    plot_activation_histogram,
    plot_feature,
    plot_steering_effect,
    plot_top_images,
)
from sae_clip_plugin.viz.dashboard_html import dashboard_html, write_dashboard

__all__ = [
    "DashboardData",
    "FeatureData",
    "TopImage",
    "collect_dashboard_data",
    "dashboard_html",
    "display_images",
    "feature_activations",
    "overlay_heatmap",
    "patch_grid",
    "patch_side",
    "plot_activation_histogram",
    "plot_feature",
    "plot_steering_effect",
    "plot_top_images",
    "steering_effect",
    "write_dashboard",
]

"""The comparison page (``fusion-ros ui``): a Streamlit app in :mod:`fusion_ros.ui.app` over the
pure helpers of :mod:`fusion_ros.ui.logic`, which import without Streamlit so they are unit-tested."""

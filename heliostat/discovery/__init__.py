"""Where endpoints and policies come from when heliostat runs on Kubernetes.

Discovery is an input, like signals: it turns EndpointSlices and InferencePolicy resources
into the endpoints and policy the pure core reads. Only this package imports the Kubernetes
client; the control law and the translators never see it.
"""

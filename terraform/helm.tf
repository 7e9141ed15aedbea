# Cluster software orch needs, pinned:
# - KubeRay operator 1.7.0: the CRDs vendored in orchestrator/k8s/crds are this release's (a test
#   compares them); authOptions token auth and deletionRules (feature gate RayJobDeletionPolicy, on by
#   default in this chart's values) are used by orch's manifests.
# - NVIDIA device plugin: the AL2023 NVIDIA AMI has the driver and container toolkit but no device
#   plugin; without it no node advertises nvidia.com/gpu.
# - EFA device plugin: advertises vpc.amazonaws.com/efa (the AMI has the EFA driver).
# - Kueue: gang admission of RayJobs/RayClusters, team quotas, topology-aware placement (k8s/kueue).
# The Node Termination Handler is in nth.tf.
resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = var.kuberay_version
  namespace        = "kuberay-system"
  create_namespace = true
}

resource "helm_release" "nvidia_device_plugin" {
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = var.nvidia_device_plugin_version
  namespace        = "nvidia-device-plugin"
  create_namespace = true

  values = [yamlencode({
    nodeSelector = { "node.kubernetes.io/instance-type" = var.gpu_instance_type }
    tolerations  = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }, { key = "orch.dev/pool-kind", operator = "Exists", effect = "NoSchedule" }]
  })]
}

resource "helm_release" "efa_device_plugin" {
  name       = "aws-efa-k8s-device-plugin"
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-efa-k8s-device-plugin"
  version    = var.efa_device_plugin_version
  namespace  = "kube-system"

  values = [yamlencode({
    nodeSelector = { "node.kubernetes.io/instance-type" = var.gpu_instance_type }
    tolerations  = [{ operator = "Exists" }]
  })]
}

resource "helm_release" "kueue" {
  name             = "kueue"
  repository       = "oci://registry.k8s.io/kueue/charts"
  chart            = "kueue"
  version          = var.kueue_version
  namespace        = "kueue-system"
  create_namespace = true
}

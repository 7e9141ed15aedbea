# The KubeRay operator (RayCluster / RayJob) and the AWS Node Termination Handler, which taints and
# cordons a node on a spot interruption or rebalance notice; orch's Kubernetes provider watches those
# taints and checkpoints the jobs on the node within the two-minute window.
resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = var.kuberay_version
  namespace        = "kuberay-system"
  create_namespace = true
}

resource "helm_release" "node_termination_handler" {
  name       = "aws-node-termination-handler"
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-node-termination-handler"
  version    = var.node_termination_handler_version
  namespace  = "kube-system"

  values = [yamlencode({
    enableSpotInterruptionDraining = true
    enableRebalanceMonitoring      = true
    enableRebalanceDraining        = false
    enableScheduledEventDraining   = true
    taintNode                      = true
    emitKubernetesEvents           = true
    nodeSelector                   = { "orch.dev/pool-kind" = "spot" }
    tolerations                    = [{ operator = "Exists" }]
  })]
}

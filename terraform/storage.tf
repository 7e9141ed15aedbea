# EKS >= 1.30 creates no default StorageClass: without one, the PostgreSQL and Redis volume claims
# never bind. gp3 through the EBS CSI driver (module.eks cluster_addons), encrypted, bound where the
# pod lands.
resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name        = "gp3"
    annotations = { "storageclass.kubernetes.io/is-default-class" = "true" }
  }
  storage_provisioner    = "ebs.csi.aws.com"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  reclaim_policy         = "Retain"
  parameters = {
    type      = "gp3"
    encrypted = "true"
  }
}

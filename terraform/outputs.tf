output "cluster_name" {
  description = "EKS cluster name"
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint"
  value       = module.eks.cluster_endpoint
}

output "kubeconfig_command" {
  description = "Writes a kubeconfig entry for orch submit --target k8s"
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "checkpoint_uri" {
  description = "checkpoint.uri for job specs"
  value       = "s3://${aws_s3_bucket.checkpoints.bucket}"
}

output "orch_role_arn" {
  description = "Annotate the orch-ray and orch-controller service accounts with eks.amazonaws.com/role-arn = this"
  value       = module.orch_irsa.iam_role_arn
}

output "gpu_pools" {
  description = "The node pools as orch spec pools (name, kind, nodes, price per GPU-hour)"
  value = [
    { name = "gpu-on-demand", kind = "on-demand", nodes = var.gpu_on_demand_nodes, price_per_gpu_hour = var.gpu_on_demand_price_per_hour / 8 },
    { name = "gpu-spot", kind = "spot", nodes = var.gpu_spot_nodes, price_per_gpu_hour = var.gpu_spot_price_per_hour / 8 },
    { name = "gpu-spare", kind = "spare", nodes = var.gpu_spare_nodes, price_per_gpu_hour = var.gpu_on_demand_price_per_hour / 8 },
  ]
}

output "idle_cost_per_hour" {
  description = "USD per hour with no job running (system nodes excluded from this rough figure: see README)"
  value       = 0.10 + var.gpu_spare_nodes * var.gpu_on_demand_price_per_hour
}

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

output "service_account_roles" {
  description = "IRSA role per service account: annotate each with eks.amazonaws.com/role-arn (docs/kubernetes.md)"
  value = {
    "orch-ray"        = module.orch_ray_irsa.iam_role_arn
    "orch-controller" = module.orch_controller_irsa.iam_role_arn
  }
}

output "orch_image_repository" {
  description = "Push the orch image (docker/Dockerfile) here; kustomize edit set image orch=<this>:<tag>"
  value       = aws_ecr_repository.orch.repository_url
}

output "scale_commands" {
  description = "EKS ignores desired_size after creation: scale a GPU group with this (the group's real name from the console or aws eks list-nodegroups)"
  value       = "aws eks update-nodegroup-config --cluster-name ${module.eks.cluster_name} --region ${var.region} --nodegroup-name <gpu-on-demand-...> --scaling-config minSize=0,maxSize=<n>,desiredSize=<n>"
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

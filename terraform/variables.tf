variable "region" {
  description = "AWS region (p5 capacity is regional; check availability first)"
  type        = string
  default     = "us-east-1"
}

variable "cluster_name" {
  description = "EKS cluster name"
  type        = string
  default     = "orch"
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version"
  type        = string
  default     = "1.32"
}

variable "availability_zone" {
  description = "The one zone the GPU node groups use: a cluster placement group lives in one zone"
  type        = string
  default     = "us-east-1a"
}

variable "gpu_instance_type" {
  description = "8-GPU instance with EFA (H100: p5.48xlarge; H200: p5e.48xlarge)"
  type        = string
  default     = "p5.48xlarge"
}

variable "gpu_on_demand_nodes" {
  description = "On-demand GPU nodes (orch pool gpu-on-demand)"
  type        = number
  default     = 128
}

variable "gpu_spot_nodes" {
  description = "Spot GPU nodes (orch pool gpu-spot)"
  type        = number
  default     = 128
}

variable "gpu_spare_nodes" {
  description = "Hot-spare GPU nodes kept idle (orch pool gpu-spare, on-demand capacity)"
  type        = number
  default     = 4
}

variable "system_instance_type" {
  description = "CPU nodes for the control plane (controller, PostgreSQL, Redis, Ray head)"
  type        = string
  default     = "m7i.4xlarge"
}

variable "system_nodes" {
  description = "CPU system nodes"
  type        = number
  default     = 3
}

variable "efa_interfaces" {
  description = "EFA interfaces per GPU node (p5.48xlarge: 32)"
  type        = number
  default     = 32
}

variable "gpu_on_demand_price_per_hour" {
  description = "Price of one GPU node per hour on demand, for orch's ledger and the README's figures (USD; check current pricing)"
  type        = number
  default     = 55.04
}

variable "gpu_spot_price_per_hour" {
  description = "Expected spot price of one GPU node per hour (USD; varies)"
  type        = number
  default     = 22.0
}

variable "checkpoint_bucket" {
  description = "S3 bucket for checkpoints (globally unique)"
  type        = string
  default     = "orch-checkpoints-example"
}

variable "checkpoint_noncurrent_days" {
  description = "Days a deleted or overwritten checkpoint object is kept (versioning)"
  type        = number
  default     = 14
}

variable "kuberay_version" {
  description = "KubeRay operator Helm chart version"
  type        = string
  default     = "1.4.2"
}

variable "node_termination_handler_version" {
  description = "AWS Node Termination Handler Helm chart version"
  type        = string
  default     = "0.21.0"
}

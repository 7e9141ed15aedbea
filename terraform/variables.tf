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
  description = "EKS Kubernetes version (one in standard support: 1.32 went to extended support, at extra cost)"
  type        = string
  default     = "1.34"
}

variable "api_allowed_cidrs" {
  description = "CIDRs that may reach the public EKS API endpoint; empty: private endpoint only (VPN/bastion)"
  type        = list(string)
  default     = []
  validation {
    condition     = !contains(var.api_allowed_cidrs, "0.0.0.0/0")
    error_message = "api_allowed_cidrs: 0.0.0.0/0 opens the Kubernetes API to the internet; give your office/VPN CIDRs."
  }
}

variable "gpu_capacity_reservation_id" {
  description = "An EC2 On-Demand Capacity Reservation or Capacity Block id for the on-demand GPU group (\"\": none)"
  type        = string
  default     = ""
}

variable "gpu_capacity_block" {
  description = "The reservation is an EC2 Capacity Block for ML (capacity_type CAPACITY_BLOCK)"
  type        = bool
  default     = false
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
  description = "On-demand GPU nodes (orch pool gpu-on-demand; jobs/v3_pretrain.yaml needs 256)"
  type        = number
  default     = 256
}

variable "gpu_spot_nodes" {
  description = "Spot GPU nodes (orch pool gpu-spot; self-managed, capacity rebalancing off)"
  type        = number
  default     = 0
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
  description = "KubeRay operator Helm chart version: the CRDs in orchestrator/k8s/crds are this version's (a test checks)"
  type        = string
  default     = "1.7.0"
}

variable "node_termination_handler_version" {
  description = "AWS Node Termination Handler Helm chart version (0.27.6 = NTH v1.25.6)"
  type        = string
  default     = "0.27.6"
}

variable "nvidia_device_plugin_version" {
  description = "NVIDIA k8s-device-plugin Helm chart version (advertises nvidia.com/gpu)"
  type        = string
  default     = "0.17.4"
}

variable "efa_device_plugin_version" {
  description = "aws-efa-k8s-device-plugin Helm chart version (advertises vpc.amazonaws.com/efa)"
  type        = string
  default     = "v0.5.13"
}

variable "kueue_version" {
  description = "Kueue Helm chart version (gang admission, team quotas, topology-aware placement)"
  type        = string
  default     = "0.14.4"
}

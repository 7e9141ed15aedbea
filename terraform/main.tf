# EKS for orch: a CPU system node group for the control plane, and 8-GPU EFA node groups (on demand,
# spot, hot spares) in one zone and ONE cluster placement group. Node labels and taints come from
# local.gpu_pools, the same names orch's KubeRay manifests select and tolerate (a test reads both).
#
# terraform-aws-modules/eks v20.37: module-level enable_efa_support adds the all-protocol
# self-referencing node security group rules EFA needs (node_groups.tf efa_security_group_rules).
# A node group's own enable_efa_support would create a placement group per group
# (modules/eks-managed-node-group/main.tf create_placement_group), so the groups take the EFA
# interfaces explicitly (the module's efa_network_interfaces shape) and the shared placement group.

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  azs        = slice(data.aws_availability_zones.available.names, 0, 3)
  gpu_subnet = [module.vpc.private_subnets[index(local.azs, var.availability_zone)]]

  gpu_taint = { key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }
  gpu_pools = {
    gpu-on-demand = {
      kind   = "on-demand"
      labels = { "orch.dev/pool" = "gpu-on-demand", "orch.dev/pool-kind" = "on-demand" }
      taints = [{ key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }]
    }
    gpu-spot = {
      kind   = "spot"
      labels = { "orch.dev/pool" = "gpu-spot", "orch.dev/pool-kind" = "spot" }
      taints = [{ key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }, { key = "orch.dev/pool-kind", value = "spot", effect = "NO_SCHEDULE" }]
    }
    gpu-spare = {
      kind   = "spare"
      labels = { "orch.dev/pool" = "gpu-spare", "orch.dev/pool-kind" = "spare" }
      taints = [{ key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }, { key = "orch.dev/pool-kind", value = "spare", effect = "NO_SCHEDULE" }]
    }
  }
  gpu_sizes = {
    gpu-on-demand = var.gpu_on_demand_nodes
    gpu-spot      = var.gpu_spot_nodes
    gpu-spare     = var.gpu_spare_nodes
  }

  # The first network card's interface is EFA with an IP, the others EFA-only (p5: 32 cards).
  efa_interfaces = [for i in range(var.efa_interfaces) : {
    associate_public_ip_address = false
    delete_on_termination       = true
    device_index                = i == 0 ? 0 : 1
    network_card_index          = i
    interface_type              = i == 0 ? "efa" : "efa-only"
  }]

  # nodeadm (AL2023): the instance-store NVMe disks as one RAID0 array for kubelet and containerd
  # (p5.48xlarge: 8 x 3.84 TB), so images, /tmp/ray and checkpoint staging do not fill the root volume.
  raid0_nodeadm = {
    content_type = "application/node.eks.aws"
    content      = <<-EOT
      apiVersion: node.eks.aws/v1alpha1
      kind: NodeConfig
      spec:
        instance:
          localStorage:
            strategy: RAID0
    EOT
  }

  capacity_reservation = var.gpu_capacity_reservation_id == "" ? null : {
    capacity_reservation_target = { capacity_reservation_id = var.gpu_capacity_reservation_id }
  }

  gpu_common = {
    ami_type                           = "AL2023_x86_64_NVIDIA"
    subnet_ids                         = local.gpu_subnet
    network_interfaces                 = local.efa_interfaces
    placement                          = { group_name = aws_placement_group.gpu.name }
    cloudinit_pre_nodeadm              = [local.raid0_nodeadm]
    capacity_reservation_specification = local.capacity_reservation
    block_device_mappings = {
      xvda = {
        device_name = "/dev/xvda"
        ebs         = { volume_size = 200, volume_type = "gp3", encrypted = true }
      }
    }
  }
}

module "vpc" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.13"

  name               = var.cluster_name
  cidr               = "10.0.0.0/16"
  azs                = local.azs
  private_subnets    = ["10.0.0.0/18", "10.0.64.0/18", "10.0.128.0/18"]
  public_subnets     = ["10.0.192.0/24", "10.0.193.0/24", "10.0.194.0/24"]
  enable_nat_gateway = true
  single_nat_gateway = true

  private_subnet_tags = {
    "kubernetes.io/role/internal-elb" = 1
  }
  public_subnet_tags = {
    "kubernetes.io/role/elb" = 1
  }
}

# Checkpoint and data traffic to S3 stays off the NAT gateway (no per-GB NAT charge, no NAT limit).
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = module.vpc.vpc_id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = module.vpc.private_route_table_ids
}

resource "aws_placement_group" "gpu" {
  name     = "${var.cluster_name}-gpu"
  strategy = "cluster"
}

module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 20.37"

  cluster_name                             = var.cluster_name
  cluster_version                          = var.kubernetes_version
  vpc_id                                   = module.vpc.vpc_id
  subnet_ids                               = module.vpc.private_subnets
  cluster_endpoint_private_access          = true
  cluster_endpoint_public_access           = length(var.api_allowed_cidrs) > 0
  cluster_endpoint_public_access_cidrs     = var.api_allowed_cidrs
  enable_cluster_creator_admin_permissions = true
  enable_irsa                              = true
  enable_efa_support                       = true

  cluster_addons = {
    coredns    = {}
    kube-proxy = {}
    vpc-cni = {
      before_compute       = true
      configuration_values = jsonencode({ enableNetworkPolicy = "true" }) # enforce k8s/base/networkpolicy.yaml
    }
    eks-pod-identity-agent = {}
    aws-ebs-csi-driver = {
      service_account_role_arn = module.ebs_csi_irsa.iam_role_arn
    }
  }

  eks_managed_node_groups = merge(
    {
      system = {
        instance_types = [var.system_instance_type]
        min_size       = var.system_nodes
        max_size       = var.system_nodes + 2
        desired_size   = var.system_nodes
        labels         = { "orch.dev/pool-kind" = "system" }
      }
    },
    {
      for name in ["gpu-on-demand", "gpu-spare"] : name => merge(local.gpu_common, {
        instance_types          = [var.gpu_instance_type]
        capacity_type           = name == "gpu-on-demand" && var.gpu_capacity_block ? "CAPACITY_BLOCK" : "ON_DEMAND"
        instance_market_options = name == "gpu-on-demand" && var.gpu_capacity_block ? { market_type = "capacity-block" } : null
        min_size                = 0
        max_size                = max(local.gpu_sizes[name], 1)
        desired_size            = local.gpu_sizes[name] # only at creation: see terraform/README.md, "Scaling"
        labels                  = local.gpu_pools[name].labels
        taints                  = { for t in local.gpu_pools[name].taints : t.key => t }
      })
    }
  )

  # Spot GPUs in a self-managed group: EKS managed node groups always turn on Capacity Rebalancing for
  # spot, which drains a node on a rebalance recommendation (no taint, no checkpoint first). Here it
  # is off on purpose; the Node Termination Handler taints on rebalance and orch only cordons.
  self_managed_node_groups = {
    gpu-spot = merge(local.gpu_common, {
      instance_type           = var.gpu_instance_type
      instance_market_options = { market_type = "spot" }
      capacity_rebalance      = false
      min_size                = 0
      max_size                = max(var.gpu_spot_nodes, 1)
      desired_size            = var.gpu_spot_nodes
      cloudinit_pre_nodeadm = [local.raid0_nodeadm, {
        content_type = "application/node.eks.aws"
        content = yamlencode({
          apiVersion = "node.eks.aws/v1alpha1"
          kind       = "NodeConfig"
          spec = { kubelet = { flags = [
            "--node-labels=${join(",", [for k, v in local.gpu_pools["gpu-spot"].labels : "${k}=${v}"])}",
            "--register-with-taints=${join(",", [for t in local.gpu_pools["gpu-spot"].taints : "${t.key}=${t.value}:NoSchedule"])}",
          ] } }
        })
      }]
    })
  }
}

# EKS for orch: a CPU system node group for the control plane, and 8-GPU EFA node groups on demand,
# on spot and as hot spares, in one cluster placement group. Node labels and taints are the ones
# orch's KubeRay manifests select and tolerate (orch.dev/pool, orch.dev/pool-kind, nvidia.com/gpu).

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 3)
  gpu_groups = {
    gpu-on-demand = { capacity = "ON_DEMAND", size = var.gpu_on_demand_nodes, kind = "on-demand" }
    gpu-spot      = { capacity = "SPOT", size = var.gpu_spot_nodes, kind = "spot" }
    gpu-spare     = { capacity = "ON_DEMAND", size = var.gpu_spare_nodes, kind = "spare" }
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

resource "aws_placement_group" "gpu" {
  name     = "${var.cluster_name}-gpu"
  strategy = "cluster"
}

module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 20.24"

  cluster_name                             = var.cluster_name
  cluster_version                          = var.kubernetes_version
  vpc_id                                   = module.vpc.vpc_id
  subnet_ids                               = module.vpc.private_subnets
  cluster_endpoint_public_access           = true
  enable_cluster_creator_admin_permissions = true
  enable_irsa                              = true

  cluster_addons = {
    coredns                = {}
    kube-proxy             = {}
    vpc-cni                = {}
    eks-pod-identity-agent = {}
  }

  eks_managed_node_groups = merge(
    {
      system = {
        instance_types = [var.system_instance_type]
        min_size       = var.system_nodes
        max_size       = var.system_nodes + 2
        desired_size   = var.system_nodes
        labels = {
          "orch.dev/pool-kind" = "system"
        }
      }
    },
    {
      for name, group in local.gpu_groups : name => {
        ami_type           = "AL2023_x86_64_NVIDIA"
        instance_types     = [var.gpu_instance_type]
        capacity_type      = group.capacity
        min_size           = 0
        max_size           = max(group.size, 1)
        desired_size       = group.size
        subnet_ids         = [module.vpc.private_subnets[index(local.azs, var.availability_zone)]]
        enable_efa_support = true
        placement = {
          group_name = aws_placement_group.gpu.name
        }
        labels = {
          "orch.dev/pool"      = name
          "orch.dev/pool-kind" = group.kind
        }
        taints = concat(
          [{ key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }],
          group.kind == "on-demand" ? [] : [{ key = "orch.dev/pool-kind", value = group.kind, effect = "NO_SCHEDULE" }]
        )
        block_device_mappings = {
          xvda = {
            device_name = "/dev/xvda"
            ebs = {
              volume_size = 500
              volume_type = "gp3"
              encrypted   = true
            }
          }
        }
      }
    }
  )
}
